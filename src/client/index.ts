/** Public surface of the PMI clients (PMI-1 and PMI-2). */
export { PmiClient, type ClientOptions, type Maxes } from './client.js';
export { endpointFromEnv, PmiEnvError, type PmiEndpoint, type PortEndpoint } from './env.js';
export { openEndpoint, connectEndpoint } from './connect.js';
export { Pmi2Client, PMI2_REFUSED, type Pmi2ClientOptions, type Pmi2GetOptions, type Pmi2Identity } from './pmi2-client.js';
