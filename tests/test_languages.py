"""One model per language: options, routing by field and by detection, the default model's
fallbacks (counted, never dropped), classify and serve with two models, reload and trust
of a language's model."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import httpx
import pytest
from conftest import (
    Broker,
    Record,
    Topics,
    consume,
    make_settings,
    produce,
    running_service,
    serve_settings,
)
from prometheus_client import CollectorRegistry

from model import Predictor, artifact_digest, evaluate, load_labelled, save_artifact, train
from model.errors import ArtifactTrustError
from model.languages import (
    DEFAULT_LANGUAGE,
    FALLBACK_NO_MODEL,
    FALLBACK_UNDETECTED,
    LanguageDetector,
    RoutedPredictor,
    primary_subtag,
)
from schemas import ArticleEvent, Classification
from service.commands.offline import run_classify, run_evaluate
from service.commands.wiring import model_spec, trust_policy
from service.config.commands import ConfigError, ServeSettings
from service.core.classify import classify_batch
from service.core.records import Topics as OutTopics
from service.core.shadow import CandidateScorer
from service.http.api import ApiServer
from service.models.loading import LanguageModel, ModelSpec, TrustPolicy
from service.models.reload import ModelReloader, show_models
from service.models.workers import ThreadClassifier, WireRecord
from service.observe.batches import BatchMetrics
from service.observe.health import Health
from service.observe.metrics import ServiceMetrics

ROOT = Path(__file__).resolve().parent.parent
GERMAN_CORPUS = ROOT / "model" / "samples" / "demo-de.jsonl"
DEMO_CORPUS = ROOT / "model" / "samples" / "demo.jsonl"

GERMAN = ("Bundesliga: Tabellenführer verliert", "Der Stürmer traf in der Nachspielzeit zum Sieg.")
ENGLISH = ("Striker scores late winner", "The home side won the derby in a sold-out stadium.")
FRENCH = ("Un but tardif", "Le match a été gagné dans un stade plein.")


@pytest.fixture(scope="module")
def german_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The German demo model, trained once for this module."""
    out = tmp_path_factory.mktemp("model") / "demo-de"
    save_artifact(train(load_labelled([GERMAN_CORPUS]).records, name="demo-de"), out)
    return out


@pytest.fixture(scope="module")
def routed(model_dir: Path, german_dir: Path) -> RoutedPredictor:
    """The English demo model as default and for ``en``, the German one for ``de``."""
    english = Predictor.load(model_dir)
    return RoutedPredictor(english, {"en": english, "de": Predictor.load(german_dir)})


def _event(article_id: str, text: tuple[str, str], language: str | None = None) -> ArticleEvent:
    return ArticleEvent(article_id=article_id, title=text[0], body=text[1], language=language)


def test_the_primary_subtag_is_the_routing_key() -> None:
    """``de-AT`` routes as ``de``; anything that is not a language tag routes as none."""
    assert primary_subtag("de-AT") == "de"
    assert primary_subtag("EN_gb") == "en"
    assert primary_subtag("gsw") == "gsw"
    assert [primary_subtag(t) for t in (None, "", "x", "deutsch", "1e")] == [None] * 5


def test_the_language_field_picks_the_model(routed: RoutedPredictor) -> None:
    """An article that says its language is answered by that language's model, even when
    its text is in another language (the field wins over detection)."""
    batch = routed.predict_batch(
        [_event("a", GERMAN, "de-AT"), _event("b", ENGLISH, "de"), _event("c", GERMAN, "en")]
    )
    assert [c.model.name for c in batch.classifications] == ["demo-de", "demo-de", "demo"]
    assert batch.languages == ["de", "de", "en"]
    assert batch.fallbacks == [None, None, None]


def test_without_a_field_the_detected_language_picks_the_model(routed: RoutedPredictor) -> None:
    """Without a language field the detector (restricted to the configured languages)
    routes German text to the German model and English text to the English one."""
    batch = routed.predict_batch([_event("a", GERMAN), _event("b", ENGLISH)])
    assert batch.languages == ["de", "en"]
    assert [c.model.name for c in batch.classifications] == ["demo-de", "demo"]


def test_a_language_without_a_model_goes_to_the_default_and_is_counted(
    routed: RoutedPredictor,
) -> None:
    """A French article (no French model) is classified by the default model, never
    dropped, and counted as a no_model fallback, by section under the default's label."""
    records = [
        WireRecord("in", 0, i, 1, None, event.model_dump_json().encode())
        for i, event in enumerate([_event("f", FRENCH, "fr"), _event("g", GERMAN, "de")])
    ]
    result = classify_batch(
        records, routed, topics=OutTopics("out", "dlq"), max_event_bytes=1 << 20
    )
    assert [item.topic for item in result.outgoing] == ["out", "out"]
    assert [(v.language, v.fallback) for v in result.verdicts] == [
        (DEFAULT_LANGUAGE, FALLBACK_NO_MODEL),
        ("de", None),
    ]
    registry = CollectorRegistry()
    BatchMetrics(ServiceMetrics(registry), 0.5).on_classified(result)
    fallbacks = "article_classifier_language_fallbacks_total"
    assert registry.get_sample_value(fallbacks, {"reason": FALLBACK_NO_MODEL}) == 1
    german = result.verdicts[1].section
    assert german is not None
    predictions = "article_classifier_predictions_total"
    assert registry.get_sample_value(predictions, {"section": german, "language": "de"}) == 1


def test_text_the_detector_cannot_place_goes_to_the_default(
    model_dir: Path, german_dir: Path
) -> None:
    """Text with no language in it (digits only) goes to the default model as undetected."""
    routed = RoutedPredictor(
        Predictor.load(model_dir),
        {"de": Predictor.load(german_dir)},
        LanguageDetector(["de", "en"]),
    )
    batch = routed.predict_batch([_event("n", ("2026", "12 34 56"))])
    assert batch.languages == [DEFAULT_LANGUAGE]
    assert batch.fallbacks == [FALLBACK_UNDETECTED]
    assert batch.classifications[0].model.name == "demo"


def test_model_options_name_a_default_and_models_per_language(tmp_path: Path) -> None:
    """``--model DIR --model de=DIR`` (or the variable, comma-separated) gives the default
    and the models per language; ``default=DIR`` is the plain form; one default exactly."""
    settings = serve_settings("--model", "a", "--model", "de=b", "--model", "EN=c")
    assert settings.model == Path("a")
    assert settings.language_dirs == {"de": Path("b"), "en": Path("c")}
    assert serve_settings("--model", "default=a").model == Path("a")
    env = serve_settings(env={"ARTICLE_CLASSIFIER_MODEL": "a,de=b"})
    assert (env.model, env.language_dirs) == (Path("a"), {"de": Path("b")})
    with pytest.raises(ConfigError, match="exactly one default model"):
        serve_settings("--model", "de=b")
    with pytest.raises(ConfigError, match="given twice"):
        serve_settings("--model", "a", "--model", "de=b", "--model", "de=c")


def test_every_language_model_is_checked_against_the_trust_policy(
    model_dir: Path, german_dir: Path, tmp_path: Path
) -> None:
    """A pin file that lists the default model but not the German one refuses the start."""
    pins = tmp_path / "pins.txt"
    pins.write_text(artifact_digest(model_dir) + "\n")
    settings = serve_settings(
        "--model", str(model_dir), "--model", f"de={german_dir}", "--model-sha256-file", str(pins)
    )
    with pytest.raises(ArtifactTrustError, match="not listed"):
        model_spec(settings, trust_policy(settings))


def test_classify_with_two_models_names_the_model_that_answered(
    model_dir: Path, german_dir: Path
) -> None:
    """The classify command routes each line to its language's model."""
    lines = [_event("de", GERMAN, "de"), _event("en", ENGLISH), _event("fr", FRENCH, "fr")]
    source = io.BytesIO(b"\n".join(e.model_dump_json().encode() for e in lines))
    sink = io.BytesIO()
    status = run_classify(
        model_dir,
        source,
        sink,
        strict=True,
        max_event_bytes=1 << 20,
        stderr=io.StringIO(),
        # English is configured too, so that detection can tell it from German.
        language_models=[("de", german_dir, None), ("en", model_dir, None)],
    )
    assert status == 0
    outputs = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert [o["classification"]["model"]["name"] for o in outputs] == ["demo-de", "demo", "demo"]


def test_evaluate_with_two_models_scores_each_record_by_the_model_that_answers_it(
    model_dir: Path, german_dir: Path, tmp_path: Path
) -> None:
    """``evaluate --model DIR --model de=DIR`` scores every record by its language's model:
    each model's block equals evaluating that model alone on its records, the whole equals
    their sum, and a French record (no French model) is scored by the default and counted."""
    english = load_labelled([DEMO_CORPUS]).records[:40]
    german = load_labelled([GERMAN_CORPUS]).records[:30]
    french = english[0].model_copy(update={"article_id": "fr-1", "language": "fr"})
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(
        "".join(
            r.model_copy(update={"language": language}).model_dump_json(exclude_none=True) + "\n"
            for records, language in ((english, "en"), (german, "de"), ([french], "fr"))
            for r in records
        )
    )
    out = io.StringIO()
    status = run_evaluate(
        model_dir,
        [mixed],
        as_json=True,
        skip_invalid=False,
        stdout=out,
        language_models=[("de", german_dir, None), ("en", model_dir, None)],
    )
    assert status == 0
    report = json.loads(out.getvalue())
    assert set(report["by_model"]) == {"default", "de", "en"}
    alone = evaluate(Predictor.load(german_dir), german).to_dict()
    assert report["by_model"]["de"] == alone
    assert report["by_model"]["default"]["records"] == 1
    assert report["language_fallbacks"] == {FALLBACK_NO_MODEL: 1}
    assert report["records"] == len(english) + len(german) + 1
    per_model = [block["sections"] for block in report["by_model"].values()]
    correct = sum(round(block["accuracy"] * block["records"]) for block in per_model)
    assert report["sections"]["records"] == sum(block["records"] for block in per_model)
    assert report["sections"]["accuracy"] == pytest.approx(correct / report["sections"]["records"])


def test_a_candidate_for_one_language_is_compared_with_that_language_model_only(
    routed: RoutedPredictor, german_dir: Path, tmp_path: Path
) -> None:
    """``--shadow-model de=DIR``: the candidate scores only the articles the German model
    answered (by field or by detection), against the German model's answers, and its
    shadow outputs are those articles alone."""
    candidate = Predictor.load(german_dir)
    events = [
        _event("de-field", GERMAN, "de"),
        _event("de-detected", GERMAN),
        _event("en", ENGLISH, "en"),
        _event("fr", FRENCH, "fr"),
    ]
    records = [
        WireRecord("in", 0, i, 1, None, event.model_dump_json().encode())
        for i, event in enumerate(events)
    ]
    result = classify_batch(
        records,
        routed,
        topics=OutTopics("out", "dlq"),
        max_event_bytes=1 << 20,
        shadow=CandidateScorer(candidate, topic="shadow", language="de"),
    )
    shadow = result.shadow
    assert shadow is not None
    assert (shadow.articles, shadow.section_agreements, shadow.failures) == (2, 2, 0)
    assert shadow.model_version == candidate.version  # the German live model's version
    assert sorted(json.loads(o.value or b"")["article_id"] for o in shadow.outgoing) == [
        "de-detected",
        "de-field",
    ]


def test_a_candidate_language_needs_a_model_of_that_language() -> None:
    """``--shadow-model de=DIR`` is refused without ``--model de=DIR``; a plain directory
    is a candidate for every article, as before."""
    settings = serve_settings("--model", "a", "--model", "de=b", "--shadow-model", "DE=c")
    assert (settings.shadow_model, settings.shadow_language) == (Path("c"), "de")
    plain = serve_settings("--model", "a", "--shadow-model", "c")
    assert (plain.shadow_model, plain.shadow_language) == (Path("c"), None)
    with pytest.raises(ConfigError, match="no --model fr=DIR to compare it with"):
        serve_settings("--model", "a", "--model", "de=b", "--shadow-model", "fr=c")


async def test_a_language_model_swaps_alone_and_a_refused_one_keeps_serving(
    model_dir: Path, german_dir: Path, tmp_path: Path
) -> None:
    """Flipping the German model's path swaps only it (counted under model="de"; the
    default model and the detector are kept, not loaded again); an artifact the pin file
    does not list is refused and the old German model keeps serving."""
    german = train(load_labelled([GERMAN_CORPUS]).records, name="demo-de")
    v2 = tmp_path / "de-v2"
    save_artifact(
        dataclasses.replace(german, manifest=german.manifest.model_copy(update={"version": "v2"})),
        v2,
    )
    link = tmp_path / "de-current"
    link.symlink_to(german_dir)
    pins = tmp_path / "pins.txt"
    pins.write_text(f"{artifact_digest(model_dir)}\n{artifact_digest(german_dir)}\n")
    policy = TrustPolicy(sha256_file=pins)
    spec = ModelSpec(
        model_dir,
        policy.for_model(model_dir),
        languages=(LanguageModel("de", link, policy.for_model(link)),),
    )
    classifier = ThreadClassifier(
        model_dir, topics=OutTopics("o", "d"), max_event_bytes=1 << 20, spec=spec
    )
    registry = CollectorRegistry()
    metrics, health = ServiceMetrics(registry), Health()
    reloader = ModelReloader(
        classifier,
        model_path=model_dir,
        shadow_path=None,
        policy=policy,
        language_paths={"de": link},
        poll_s=0,
        metrics=metrics,
        health=health,
        on_swapped=lambda models: show_models(metrics, health, models),
    )
    try:
        await classifier.start()
        default_version = classifier.models.primary.version
        before = dict(classifier.models.languages)["de"].version
        serving = classifier._current().primary
        assert isinstance(serving, RoutedPredictor)
        link.unlink()
        link.symlink_to(v2)
        await reloader.check()
        assert dict(classifier.models.languages)["de"].version == before
        refused = {"model": "de", "reason": "trust"}
        assert (
            registry.get_sample_value("article_classifier_model_reload_failures_total", refused)
            == 1
        )
        pins.write_text(pins.read_text() + artifact_digest(v2) + "\n")
        await reloader.check()
        assert dict(classifier.models.languages)["de"].version == "v2"
        assert classifier.models.primary.version == default_version
        # Only the German model was loaded again: the default model and the detector stay.
        swapped = classifier._current().primary
        assert isinstance(swapped, RoutedPredictor)
        assert swapped.default is serving.default
        assert swapped.detector is serving.detector
        reloads = "article_classifier_model_reloads_total"
        assert registry.get_sample_value(reloads, {"model": "de"}) == 1
        (result,) = await classifier.classify_articles([_event("x", GERMAN, "de")])
        assert isinstance(result, Classification)
        assert result.model.version == "v2"
    finally:
        classifier.close()


@pytest.mark.kafka
async def test_serve_with_two_models_routes_counts_and_never_drops(
    broker: Broker, topics: Topics, model_dir: Path, german_dir: Path
) -> None:
    """Through serve: German articles (by field or detected) are answered by the German
    model, English ones by the English (also the default) model, loaded once, and a French
    one by the default model, counted."""
    settings = make_settings(
        broker.bootstrap_servers,
        topics,
        model_dir,
        model=[str(model_dir), f"de={german_dir}", f"en={model_dir}"],
    )
    events = [
        _event("de-field", GERMAN, "de-CH"),
        _event("de-detected", GERMAN),
        _event("en", ENGLISH, "en"),
        _event("fr", FRENCH, "fr"),
    ]
    records: list[Record] = [(e.article_id.encode(), e.model_dump_json().encode()) for e in events]
    async with running_service(settings, None) as service:
        await produce(broker.bootstrap_servers, topics.input, records)
        outputs = await consume(broker.bootstrap_servers, topics.output, len(events))
    by_id = {
        value["article_id"]: value["classification"]["model"]["name"]
        for value in (json.loads(record.value) for record in outputs)
    }
    assert by_id == {"de-field": "demo-de", "de-detected": "demo-de", "en": "demo", "fr": "demo"}
    value = service.registry.get_sample_value
    assert value("article_classifier_language_fallbacks_total", {"reason": "no_model"}) == 1
    assert value("article_classifier_language_fallbacks_total", {"reason": "undetected"}) == 0
    german = sum(
        sample.value
        for metric in service.registry.collect()
        if metric.name == "article_classifier_predictions"
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels.get("language") == "de"
    )
    assert german == 2
    # Each model has its own drift window: the German articles, the English one, the French
    # one the default model took.
    window = "article_classifier_drift_window_articles"
    assert [value(window, {"language": key}) for key in ("de", "en", "default")] == [2, 1, 1]


async def test_the_suggest_api_answers_with_the_model_of_each_language(
    model_dir: Path, german_dir: Path
) -> None:
    """The suggest API, over serve's classifier with a German model beside the default,
    answers a German article with the German model and an English one with the default."""
    spec = ModelSpec(model_dir, languages=(LanguageModel("de", german_dir),))
    classifier = ThreadClassifier(
        model_dir, topics=OutTopics("o", "d"), max_event_bytes=1 << 20, spec=spec
    )
    await classifier.start()
    config = ServeSettings(model=[str(model_dir), f"de={german_dir}"], api_port=0)
    body = json.dumps(
        [
            json.loads(_event("de", GERMAN, "de").model_dump_json()),
            json.loads(_event("en", ENGLISH, "en-GB").model_dump_json()),
        ]
    )
    try:
        async with (
            ApiServer(config, classifier, registry=CollectorRegistry()) as server,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as client,
        ):
            response = await client.post(
                "/v1/classify", content=body, headers={"Content-Type": "application/json"}
            )
    finally:
        classifier.close()
    assert response.status_code == 200, response.text
    names = [item["classification"]["model"]["name"] for item in response.json()]
    assert names == ["demo-de", "demo"]
