"""Cluster execution: every pipeline step as a job (SLURM through submitit, or local processes),
recovery and relabelling sharded, students by DDP across nodes. See docs/cluster.md."""
