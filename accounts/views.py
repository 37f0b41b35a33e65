from rest_framework import exceptions

from accounts.models import Engine
from activity import attribution
from cacheweb.engine_api import EngineAPIView, ok

MAX_ENGINE_ID = 255


class ConfigView(EngineAPIView):
    endpoint = "config"

    def get(self, request):
        body = self.body(request)
        engine_id = body.get("EngineID", "")
        if not isinstance(engine_id, str):
            raise exceptions.ParseError("EngineID must be a string")
        if "\x00" in engine_id:
            raise exceptions.ParseError("EngineID must not contain NUL characters")
        if len(engine_id) > MAX_ENGINE_ID:
            raise exceptions.ParseError(f"EngineID is longer than {MAX_ENGINE_ID} characters")
        if engine_id:
            remote_addr = request.META.get("REMOTE_ADDR") or None
            engine = Engine.seen(
                request.auth,
                engine_id,
                remote_addr=remote_addr,
                user_agent=request.META.get("HTTP_USER_AGENT", ""),
            )
            attribution.remember(request.auth, remote_addr, engine)
            self.engine = attribution.Guess(engine.pk, engine.engine_id)
        return ok(self.org.engine_config())
