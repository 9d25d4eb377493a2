/** Public surface of the PMI-1 client. */
export { PmiClient, type ClientOptions, type Maxes } from './client.js';
export { endpointFromEnv, PmiEnvError, type PmiEndpoint, type PortEndpoint } from './env.js';
export { openEndpoint } from './connect.js';
