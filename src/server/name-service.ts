/** PMI's name service (MPI_Publish_name / Lookup_name / Unpublish_name): service → port. */
export class NameService {
  private readonly services = new Map<string, string>();

  /** false when the service is already published (hydra answers rc=1 key_already_present). */
  publish(service: string, port: string): boolean {
    if (this.services.has(service)) return false;
    this.services.set(service, port);
    return true;
  }

  unpublish(service: string): boolean {
    return this.services.delete(service);
  }

  get size(): number {
    return this.services.size;
  }

  has(service: string): boolean {
    return this.services.has(service);
  }

  lookup(service: string): string | undefined {
    return this.services.get(service);
  }
}
