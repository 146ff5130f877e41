"""`edgekv bench`: edgekv beside the runtimes users would pick instead, in one run (issue 8).

One idea per file: `workloads` (the token ids every runner gets), `envs` (the peers' own
virtual environments, made once and reused), `hf_dir` (the model as an HF directory for the
peers' exporters), `peers` (what each peer needs and its setup), `runner` (a child process that
prints one JSON line), `childio` (what every child shares, stdlib only), `peer_*` (the scripts
the children run), `membw` (memory bandwidth and the decode bound), `report` (the JSON object
and the console table), `bench` (the whole run), `command` (the CLI arguments). See docs/bench.md.
"""
