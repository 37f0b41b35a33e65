from django.apps import AppConfig


class CachewebConfig(AppConfig):
    name = "cacheweb"
    verbose_name = "cacheweb service"
