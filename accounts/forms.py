from django import forms

from accounts.models import Organization


class TokenForm(forms.Form):
    label = forms.CharField(max_length=200, required=False, help_text="what the token is for")
    read_only = forms.BooleanField(required=False, help_text="may import and download, never export")


class OrganizationSettingsForm(forms.ModelForm):
    class Meta:
        model = Organization
        fields = ["name", "import_period", "export_period", "export_timeout"]
