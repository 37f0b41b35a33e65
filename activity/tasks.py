import logging

from celery import shared_task

from activity import services

log = logging.getLogger("cacheweb.activity")


@shared_task(name="activity.roll_up")
def roll_up():
    rolled = services.roll_up()
    if rolled:
        log.info("activity roll-up: %s hourly rows rolled into days", rolled)
    return rolled


@shared_task(name="activity.storage_samples")
def storage_samples():
    return services.take_storage_samples()
