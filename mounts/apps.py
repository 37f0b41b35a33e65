from django.apps import AppConfig


class MountsConfig(AppConfig):
    name = "mounts"
    verbose_name = "synced cache mounts"
