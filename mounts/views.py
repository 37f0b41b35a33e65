from rest_framework import exceptions

from activity.models import Signal

from cacheweb.engine_api import EngineAPIView, ok
from mounts import services


class CacheMountConfigView(EngineAPIView):
    endpoint = "cacheMountConfig"

    def get(self, request):
        self.body(request)
        entries = services.synced_mount_config(request, self.org)
        offered = [entry for entry in entries if entry["URL"]]
        self.count(Signal.MOUNT_DOWNLOADS, len(offered))
        self.count(Signal.MOUNT_DOWNLOAD_BYTES, sum(entry["Size"] for entry in offered))
        return ok({"SyncedCacheMounts": entries})


class CacheMountUploadURLView(EngineAPIView):
    """Not `writes = True`: a read-only token gets Skip, which ends the engine's upload
    quietly, rather than a 403 it would log as an error at every shutdown."""

    endpoint = "cacheMountUploadURL"

    def get(self, request):
        try:
            offer = services.parse_upload_offer(self.body(request))
        except services.InvalidOffer as e:
            raise exceptions.ParseError(str(e)) from None
        answer, skipped = services.offer_upload(
            request,
            request.auth,
            offer,
            remote_addr=request.META.get("REMOTE_ADDR") or None,
            user_agent=request.META.get("HTTP_USER_AGENT", ""),
            engine=self.engine,
        )
        if answer["Skip"]:
            self.count(Signal.MOUNT_SKIPS, 1, skipped)
        return ok(answer)
