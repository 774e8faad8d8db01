"""pytest plugin: a real Kafka-protocol broker (tansu) on a free port; see issue 4."""
