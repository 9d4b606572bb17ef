"""Backends: one scheduler each (local, slurm, pbs, batch, ec2) behind one interface."""
