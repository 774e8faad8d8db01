import os

import sabot as faust

# set the default Django settings module for the 'faust' program.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")

# Sabot has no app.on_configured (its settings are given to App(...)): the
# Django settings are read here instead of in Faust's on_configured handler.
from django.conf import settings  # noqa: E402

app = faust.App("django-proj", autodiscover=True, origin="faustapp",
                broker=settings.FAUST_BROKER_URL, store=settings.FAUST_STORE_URL)


def main():
    app.main()


if __name__ == "__main__":
    main()
