"""The dashboard's cache pages: what an organization's cache holds, what it weighs, who
uses it, and eviction for maintainers.

Not a Django app: it has no models, and its templates live with the others in templates/.
The organization, token and engine pages are in accounts.pages; these pages follow the
same scoping (accounts.scoping) and are routed from accounts/page_urls.py.
"""
