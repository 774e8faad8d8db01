"""Not in Faust's example: two views that ask its agents, so that the
Django + Sabot app can be driven over HTTP (tests/test_examples_faust_web.py)."""
from django.http import JsonResponse

from .agents import AccountRecord, add_account, disable_account
from .models import Account


async def add(request):
    record = AccountRecord(name=request.GET["name"], score=float(request.GET["score"]),
                           active=True)
    pk = await add_account.ask(record)
    return JsonResponse({"pk": pk})


async def disable(request, pk):
    return JsonResponse({"active": await disable_account.ask(pk)})


def show(request, pk):
    account = Account.objects.get(pk=pk)
    return JsonResponse({"name": account.name, "score": str(account.score),
                         "active": account.active})
