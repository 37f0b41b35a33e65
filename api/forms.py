from django import forms

MAX_EXPIRES_DAYS = 3650


class ApiTokenForm(forms.Form):
    label = forms.CharField(max_length=200, required=False, help_text="what the token is for")
    read_only = forms.BooleanField(required=False, help_text="may read, never change anything")
    expires_days = forms.IntegerField(
        required=False, min_value=1, max_value=MAX_EXPIRES_DAYS, label="Expires after (days)",
        help_text="empty: never",
    )
