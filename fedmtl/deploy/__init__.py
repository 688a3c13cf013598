"""Run the federation on real Flower processes: local deployments, certificates, device files."""
