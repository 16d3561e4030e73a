"""Developer and technician tools beside the running appliance: bench, doctor, status, samples."""
