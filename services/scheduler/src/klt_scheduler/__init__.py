"""klt scheduler: runs the lifecycle phases and releases the scheduling gate.

Owns the status of KeptnAppVersions and KeptnWorkloadVersions, creates their KeptnTasks and
KeptnEvaluations (never runs them), and removes ``keptn-prechecks-gate`` from a workload's pods
once its pre-deployment checks passed.

- ``machine``: the phase state machine as pure functions (Keptn's rules);
- ``engine``: one reconcile pass over an app or workload version (read, decide, write, then
  announce);
- ``triggers``: what starts a pass (bus events, watch events, the resync);
- ``workqueue``: one pass per object at a time, extra triggers coalesced, timers;
- ``world``: the watch caches and the scope (namespace, shard);
- ``tracing``, ``metrics``: Keptn's spans and metrics;
- ``app``: the wiring onto the service template.
"""
