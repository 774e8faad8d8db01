from django.urls import path

from . import views

urlpatterns = [
    path("add", views.add),
    path("<int:pk>/disable", views.disable),
    path("<int:pk>", views.show),
]
