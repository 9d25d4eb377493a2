/** Public surface of the PMI-1 client. */
export { PmiClient, type ClientOptions, type Maxes } from './client.js';
export { endpointFromEnv, PmiEnvError, type PmiEndpoint } from './env.js';
export { openEndpoint } from './connect.js';
