/**
 * pmibridge as a library: the sans-I/O protocol core and engines, the client, and the hosts that
 * put engines on sockets. The CLI (`pmibridge …`) is built from these same pieces.
 */
export * from './protocol/index.js';
export * from './server/index.js';
export * from './client/index.js';
export { RelayEngine, type RelayEngineOptions, type UpstreamIdentity } from './relay/engine.js';
export type * from './relay/types.js';
export { JobServer, type JobServerOptions } from './host/job-server.js';
export { RelayHost, type RelayHostOptions, type UpstreamSpec } from './host/relay-host.js';
export { ObserverBus, type BusEvent } from './host/bus.js';
export { launch, type LaunchOptions } from './launcher/launch.js';
