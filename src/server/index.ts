/** Public surface of the sans-I/O server engine. */
export * from './engine.js';
export * from './types.js';
export { EpochKvs } from './kvs.js';
export { NameService } from './name-service.js';
