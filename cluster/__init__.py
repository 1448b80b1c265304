"""Scale-out on a Ray cluster, just above core: the stages that compute (emission, eval) run their
work on it; core, lm and decoders know nothing of it. Ray is imported only when a run uses it.

- ctclab.cluster.connection: RayOptions (--ray ADDRESS, --ray-workers, ...), open_cluster and
  Cluster (the connection: fails fast on an unreachable address, kills its workers on exit)
- ctclab.cluster.workers: Worker (the actor base class, one log file each) and WorkerPool (jobs
  run in order on the actors; a dead worker's jobs go to the others and a replacement starts)
"""
