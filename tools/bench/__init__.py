"""`edgekv bench`: edgekv beside the runtimes users would pick instead, in one run (issue 8).

One idea per file: `workloads` (the token ids every runner gets), `envs` (the peers' own
virtual environments, made once and reused), `runner` (a child process that prints one JSON
line), `peer_*` (the scripts the children run), `membw` (memory bandwidth and the decode bound),
`report` (the JSON object and the console table), `bench` (the whole run).
"""
