"""The campaign domain: statuses and their transitions, campaign definitions, the job
store. Knows nothing of HTTP."""
