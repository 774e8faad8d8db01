"""Web views beside the agents: a word count you can read and feed over HTTP.

Run it: ``python examples/web_views.py worker -l info --web-port 6066``, then

* ``http://127.0.0.1:6066/`` the live status page (agents, rates, the table, the pipeline);
* ``curl 127.0.0.1:6066/count/stream/`` one word's count (``app.table_route``);
* ``curl 127.0.0.1:6066/words/?top=5`` the most frequent words;
* ``curl -X POST -d '{"text": "more words here"}' 127.0.0.1:6066/words/`` feeds text in;
* ``curl 127.0.0.1:6066/admin/ping`` a page from a ``web.Blueprint``.

A POST whose body is not ``{"text": "..."}`` answers 400 saying why, and
nothing reaches the agents. At start a task feeds ``SABOT_DEMO_SENTENCES``
sentences (default 200) so there is something to look at.
"""
import os

import sabot
from sabot import web

app = sabot.App("web-views")
sentences = app.channel(name="sentences")
words = app.channel(name="words")
counts = app.Table("word-counts", default=int, help="Occurrences of each word")

TEXT = ("a stream of values flows through agents and tables while the web views "
        "read the tables and the status page draws the stream").split()
N_SENTENCES = int(os.environ.get("SABOT_DEMO_SENTENCES", "200"))


@app.agent(sentences, sink=[words])
async def split(stream):
    """Sentences in, words out."""
    async for sentence in stream:
        for word in sentence.lower().split():
            yield word


@app.agent(words)
async def count(stream):
    """Counts every word in the table."""
    async for word in stream:
        counts[word] += 1


@app.page("/count/{word}/")
class WordCount(web.View):
    """One word's count; with several Kafka workers, the one holding the word answers."""

    @app.table_route(table=counts, match_info="word")
    async def get(self, request, word):
        return self.json({"word": word, "count": counts[word]})


@app.page("/words/")
class Words(web.View):
    """GET the most frequent words; POST ``{"text": "..."}`` to count more."""

    async def get(self, request):
        try:
            top = int(request.query.get("top", "10"))
        except ValueError:
            raise self.ValidationError("top must be a whole number") from None
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max(top, 0)]
        return self.json({"top": [{"word": w, "count": n} for w, n in ranked]})

    async def post(self, request):
        try:
            body = await request.json()
        except ValueError:
            raise self.ValidationError("the body must be JSON: {\"text\": \"...\"}") from None
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise self.ValidationError("give a non-empty string in \"text\"")
        await sentences.send(value=text)
        return self.json({"accepted": len(text.split())}, status=202)


admin = web.Blueprint("admin")


@admin.route("/ping", name="ping")
async def ping(self, request):
    """A page from a blueprint: alive, and where the word count lives."""
    return self.json({"pong": True, "count_url": self.path_for("WordCount", word="stream")})


admin.register(app, url_prefix="/admin")


@app.task
async def feed():
    """Something to look at: N_SENTENCES sentences made of TEXT."""
    for i in range(N_SENTENCES):
        start = i % len(TEXT)
        await sentences.send(value=" ".join(TEXT[start:start + 6]))


if __name__ == "__main__":
    app.main()
