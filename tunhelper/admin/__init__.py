"""The admin's commands: leases, release, doctor, metrics."""
