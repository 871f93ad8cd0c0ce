"""klt app-aggregator: builds KeptnWorkloads, KeptnApps and their versions from admitted pods."""
