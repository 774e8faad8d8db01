from django.db import models
from django.utils.translation import gettext_lazy as _


class Account(models.Model):
    name = models.CharField(_('name'), max_length=100)
    score = models.DecimalField(_('score'), default=0.0,
                                max_digits=30, decimal_places=10)  # Faust's 1000 places cannot be read back from SQLite
    active = models.BooleanField(_('active'), default=True)

    class Meta:
        verbose_name = _('account')
        verbose_name_plural = _('accounts')
