"""The durable job scheduler: named jobs with stored arguments, run by workers in every process."""
