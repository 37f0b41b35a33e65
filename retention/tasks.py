from celery import shared_task

from retention import services


# Not retried: the next scheduled pass picks up whatever this one left.
@shared_task(name="retention.collect_garbage", ignore_result=True)
def collect_garbage():
    """The periodic storage lifecycle pass over every organization (see services)."""
    services.collect_garbage()
