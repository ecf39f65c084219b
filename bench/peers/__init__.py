"""What we compare against, on the same work: the old job manager (EED) and Celery."""
