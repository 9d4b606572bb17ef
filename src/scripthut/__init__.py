"""ScriptHut: run and watch batches of shell tasks on Slurm, PBS, AWS and this machine."""

__version__ = "0.1.0"
