"""Tables: keyed state with durable local stores and changelogs (Faust's API, Arrow inside)."""
