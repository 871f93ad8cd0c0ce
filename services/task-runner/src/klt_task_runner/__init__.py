"""klt task-runner: runs KeptnTasks as Kubernetes Jobs, and Keptn CloudEvents as jobs.

The second mode is the job executor of Keptn's job-executor-service.
"""
