"""The settings an operator changes on cache mounts: the organization's policy and each
mount's switch and size limit. The dashboard and the operator API bind these same forms,
so a value is accepted or refused with the same message in both."""

from django import forms

from audit import services as audit
from audit.models import Action
from mounts.models import CacheMount, MountPolicy

MAX_PATTERNS = 100
MAX_PATTERN_LENGTH = 255


class AuditedSettingsForm(forms.ModelForm):
    def save_by(self, actor):
        """Save, and audit what changed as `actor` (a user, or audit.services.command)."""
        saved = self.save()
        audit.record_form_changes(saved.organization, actor, Action.SETTINGS_CHANGED, self, subject=self.subject())
        return saved


class MountPolicyForm(AuditedSettingsForm):
    def subject(self):
        return "mount policy"

    class Meta:
        model = MountPolicy
        fields = ["mode", "patterns", "size_limit"]

    def clean_patterns(self):
        # Every pattern is matched against every mount name an engine offers: bound them.
        lines = [line.strip() for line in self.cleaned_data["patterns"].splitlines() if line.strip()]
        if len(lines) > MAX_PATTERNS:
            raise forms.ValidationError(f"at most {MAX_PATTERNS} patterns")
        long = [line for line in lines if len(line) > MAX_PATTERN_LENGTH]
        if long:
            raise forms.ValidationError(f"a pattern is at most {MAX_PATTERN_LENGTH} characters")
        return "\n".join(lines)

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("mode") == "patterns" and "patterns" in cleaned and not cleaned["patterns"]:
            self.add_error("patterns", "give at least one pattern when only matching names are synced")
        return cleaned


class MountSettingsForm(AuditedSettingsForm):
    def subject(self):
        return f"mount {self.instance.name!r}"

    class Meta:
        model = CacheMount
        fields = ["switch", "size_limit"]
