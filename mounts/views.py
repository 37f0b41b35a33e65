from rest_framework import exceptions

from cacheweb.engine_api import EngineAPIView, ok
from mounts import services


class CacheMountConfigView(EngineAPIView):
    endpoint = "cacheMountConfig"

    def get(self, request):
        self.body(request)
        return ok({"SyncedCacheMounts": services.synced_mount_config(request, self.org)})


class CacheMountUploadURLView(EngineAPIView):
    """Not `writes = True`: a read-only token gets Skip, which ends the engine's upload
    quietly, rather than a 403 it would log as an error at every shutdown."""

    endpoint = "cacheMountUploadURL"

    def get(self, request):
        try:
            offer = services.parse_upload_offer(self.body(request))
        except services.InvalidOffer as e:
            raise exceptions.ParseError(str(e)) from None
        answer = services.offer_upload(
            request,
            request.auth,
            offer,
            remote_addr=request.META.get("REMOTE_ADDR") or None,
            user_agent=request.META.get("HTTP_USER_AGENT", ""),
        )
        return ok(answer)
