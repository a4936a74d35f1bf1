"""GLUE loader: the real TSV files in shared/data/glue, small files in the layouts of the
tasks that are not shipped (MNLI, QQP, QNLI, WNLI), errors, and the hub code path."""

from __future__ import annotations

import collections
import warnings
from pathlib import Path

import pytest

from headcount.errors import DataError, TaskError
from headcount.tasks import glue
from headcount.tasks.base import Example
from headcount.tasks.glue import GLUE_TASKS, load_glue

# The repo root's parent holds shared/ (also in CI, where the repo is cloned beside it).
REPO_ROOT = Path(__file__).resolve().parents[2]
GLUE_DIR = REPO_ROOT.parent / "shared" / "data" / "glue"
needs_glue = pytest.mark.skipif(not GLUE_DIR.is_dir(), reason=f"no GLUE data at {GLUE_DIR}")


# --------------------------------------------------------------------------- real files

REAL = [
    # task, split, rows, label counts (None for the regression task)
    ("cola", "train", 8551, {1: 6023, 0: 2528}),
    ("cola", "dev", 1043, {1: 721, 0: 322}),
    ("sst2", "train", 67349, {1: 37569, 0: 29780}),
    ("sst2", "dev", 872, {1: 444, 0: 428}),
    ("mrpc", "train", 3668, {1: 2474, 0: 1194}),
    ("mrpc", "dev", 408, {1: 279, 0: 129}),
    ("rte", "train", 2490, {0: 1249, 1: 1241}),
    ("rte", "dev", 277, {0: 146, 1: 131}),
    ("stsb", "train", 5749, None),
    ("stsb", "dev", 1500, None),
]


def _first_data_line(path: Path) -> tuple[list[str] | None, list[str]]:
    """(header fields or None, first data row fields), read independently of the loader."""
    lines = path.read_bytes().decode("utf-8-sig").split("\n")
    if path.parent.name == "CoLA":
        return None, lines[0].split("\t")
    return lines[0].split("\t"), lines[1].split("\t")


def _expected_first(task: str, path: Path) -> Example:
    header, row = _first_data_line(path)
    if header is None:  # CoLA: source, label, original label, sentence
        return Example(row[3], None, int(row[1]))
    col = {name: row[i] for i, name in enumerate(header)}
    if task == "sst2":
        return Example(col["sentence"], None, int(col["label"]))
    if task == "mrpc":
        return Example(col["#1 String"], col["#2 String"], int(col["Quality"]))
    if task == "rte":
        return Example(col["sentence1"], col["sentence2"],
                       ("entailment", "not_entailment").index(col["label"]))
    return Example(col["sentence1"], col["sentence2"], float(col["score"]))


@needs_glue
@pytest.mark.parametrize(("task", "split", "rows", "counts"), REAL,
                         ids=[f"{t}-{s}" for t, s, _, _ in REAL])
def test_real_glue_files(task, split, rows, counts):
    examples = load_glue(task, split, GLUE_DIR)
    assert len(examples) == rows
    path = GLUE_DIR / GLUE_TASKS[task].directory / f"{split}.tsv"
    assert examples[0] == _expected_first(task, path)
    assert all(isinstance(e.text, str) and e.text for e in examples)
    if task in ("mrpc", "rte", "stsb"):
        assert all(isinstance(e.text_pair, str) and e.text_pair for e in examples)
    else:
        assert all(e.text_pair is None for e in examples)
    if counts is None:
        scores = [e.label for e in examples]
        assert all(isinstance(s, float) and 0.0 <= s <= 5.0 for s in scores)
        assert 1.5 < sum(scores) / len(scores) < 3.5
        assert len(set(scores)) > 50
    else:
        assert all(type(e.label) is int for e in examples)
        assert dict(collections.Counter(e.label for e in examples)) == counts


@needs_glue
def test_mrpc_bom_is_not_part_of_the_header():
    # MRPC's files start with a UTF-8 byte order mark before 'Quality'.
    assert (GLUE_DIR / "MRPC" / "dev.tsv").read_bytes().startswith(b"\xef\xbb\xbf")
    assert len(load_glue("mrpc", "dev", GLUE_DIR)) == 408


@needs_glue
def test_data_dir_may_be_the_task_folder_and_validation_alias():
    direct = load_glue("rte", "validation", GLUE_DIR / "RTE")
    assert direct == load_glue("RTE", "dev", GLUE_DIR)


@needs_glue
def test_quotes_are_not_csv_quoting():
    # MRPC has unbalanced '"' characters; splitting with csv quoting would merge lines.
    texts = [e.text_pair for e in load_glue("mrpc", "dev", GLUE_DIR)]
    assert texts[0].startswith('" The foodservice pie')


# --------------------------------------------------------------------------- synthetic layouts

MNLI_TRAIN_HEADER = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\t"
                     "sentence2_binary_parse\tsentence1_parse\tsentence2_parse\tsentence1\t"
                     "sentence2\tlabel1\tgold_label")
MNLI_DEV_HEADER = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\t"
                   "sentence2_binary_parse\tsentence1_parse\tsentence2_parse\tsentence1\t"
                   "sentence2\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label")


def _mnli_row(i, s1, s2, labels):
    parse1, parse2 = f"( {s1} )", f"( {s2} )"
    return "\t".join([str(i), str(1000 + i), f"{1000 + i}e", "fiction", parse1, parse2,
                      f"(ROOT {parse1})", f"(ROOT {parse2})", s1, s2, *labels])


def _write(path: Path, lines: list[str], end: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((end.join(lines) + end).encode("utf-8"))
    return path


@pytest.fixture
def mnli_dir(tmp_path):
    _write(tmp_path / "MNLI" / "train.tsv", [
        MNLI_TRAIN_HEADER,
        _mnli_row(0, "Conceptually cream skimming has two basic dimensions.",
                  "Product and geography are what make cream skimming work.",
                  ["neutral", "neutral"]),
        _mnli_row(1, 'He said "yes.', "He agreed.", ["entailment", "entailment"]),
        _mnli_row(2, "The cat sat.", "No cat sat.", ["contradiction", "contradiction"]),
    ])
    _write(tmp_path / "MNLI" / "dev_matched.tsv", [
        MNLI_DEV_HEADER,
        _mnli_row(0, "The new rights are nice enough", "Everyone really likes the newest benefits",
                  ["entailment", "neutral", "neutral", "neutral", "neutral", "neutral"]),
        _mnli_row(1, "This site includes a list.", "The list is not here.",
                  ["contradiction"] * 5 + ["contradiction"]),
    ])
    _write(tmp_path / "MNLI" / "dev_mismatched.tsv", [
        MNLI_DEV_HEADER,
        _mnli_row(0, "Your contribution helped.", "It helped.",
                  ["entailment", "entailment", "neutral", "entailment", "entailment",
                   "entailment"]),
    ])
    return tmp_path


def test_mnli_train_and_dev_sets(mnli_dir):
    train = load_glue("mnli", "train", mnli_dir)
    assert [e.label for e in train] == [1, 0, 2]
    assert train[1] == Example('He said "yes.', "He agreed.", 0)
    matched = load_glue("mnli", "dev", mnli_dir)
    assert matched == load_glue("mnli", "dev_matched", mnli_dir)
    assert matched == load_glue("mnli", "validation", mnli_dir)
    # gold_label is the last column, not label1.
    assert [e.label for e in matched] == [1, 2]
    mismatched = load_glue("mnli-mm", "dev", mnli_dir)
    assert mismatched == [Example("Your contribution helped.", "It helped.", 0)]
    assert load_glue("mnli", "dev_mismatched", mnli_dir) == mismatched
    assert load_glue("mnli-mm", "dev_matched", mnli_dir) == matched
    assert load_glue("mnli-mm", "train", mnli_dir) == train


def test_mnli_crlf_line_endings(tmp_path):
    _write(tmp_path / "MNLI" / "dev_mismatched.tsv",
           [MNLI_DEV_HEADER, _mnli_row(0, "A.", "B.", ["neutral"] * 6)], end="\r\n")
    assert load_glue("mnli-mm", "dev", tmp_path) == [Example("A.", "B.", 1)]


def _tsv(*fields) -> str:
    return "\t".join(str(f) for f in fields)


QQP_HEADER = _tsv("id", "qid1", "qid2", "question1", "question2", "is_duplicate")


def test_qqp_skips_malformed_rows_with_one_warning(tmp_path):
    _write(tmp_path / "QQP" / "train.tsv", [
        QQP_HEADER,
        _tsv(133273, 213221, 213222, "How is the life of a math student? Could you describe "
             "your own experiences?", "Which level of prepration is enough for the exam jlpt5?",
             0),
        _tsv(402555, 536040, 536041, "How do I control my horny emotions?",
             "How do you control your horniness?", 1),
        # A question broken over two lines, as in the real train file: two short rows.
        _tsv(363362, 711434, 711435, 'What is "the'),
        _tsv('best" answer?', "What is the best answer?", 1),
        _tsv(360472, 364011, 490273, "What causes stool color to change to yellow?",
             "What can cause stool to come out as little balls?", 0),
    ])
    with pytest.warns(UserWarning, match=r"Skipped 2 malformed row\(s\).*train\.tsv"):
        examples = load_glue("qqp", "train", tmp_path)
    assert [e.label for e in examples] == [0, 1, 0]
    assert examples[1].text == "How do I control my horny emotions?"
    assert examples[1].text_pair == "How do you control your horniness?"


def test_qqp_clean_file_does_not_warn(tmp_path):
    _write(tmp_path / "QQP" / "dev.tsv", [
        QQP_HEADER,
        _tsv(201359, 303345, 303346, "Why are African-Americans so beautiful?",
             "Why are hispanics so beautiful?", 0),
    ])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        examples = load_glue("qqp", "validation", tmp_path)
    assert examples == [Example("Why are African-Americans so beautiful?",
                                "Why are hispanics so beautiful?", 0)]


def test_qnli_layout(tmp_path):
    _write(tmp_path / "QNLI" / "dev.tsv", [
        _tsv("index", "question", "sentence", "label"),
        _tsv(0, "What came into force after the new constitution was herald?",
             "As of that day, the new constitution heralding the Second Republic came into "
             "force.", "entailment"),
        _tsv(1, "What is the first major city in the stream of the Rhine?",
             "The most important tributaries in this area are the Ill below of Strasbourg.",
             "not_entailment"),
    ])
    examples = load_glue("qnli", "dev", tmp_path)
    assert [e.label for e in examples] == [0, 1]
    assert examples[0].text.startswith("What came into force")
    assert examples[0].text_pair.startswith("As of that day")


def test_wnli_labels_are_file_ints(tmp_path):
    _write(tmp_path / "WNLI" / "train.tsv", [
        _tsv("index", "sentence1", "sentence2", "label"),
        _tsv(0, "I stuck a pin through a carrot. When I pulled the pin out, it had a hole.",
             "The carrot had a hole.", 1),
        _tsv(1, "John couldn't see the stage with Billy in front of him because he is so "
             "short.", "John is so short.", 1),
        _tsv(2, "The police arrested all of the gang members.",
             "The police were trying to stop the drug trade in the neighborhood.", 0),
    ])
    examples = load_glue("wnli", "train", tmp_path)
    assert [e.label for e in examples] == [1, 1, 0]
    assert GLUE_TASKS["wnli"].label_names[1] == "entailment"


# --------------------------------------------------------------------------- task table


def test_task_table_matches_hub_label_order():
    expected = {
        "cola": ("unacceptable", "acceptable"), "sst2": ("negative", "positive"),
        "mrpc": ("not_equivalent", "equivalent"), "qqp": ("not_duplicate", "duplicate"),
        "stsb": (), "mnli": ("entailment", "neutral", "contradiction"),
        "mnli-mm": ("entailment", "neutral", "contradiction"),
        "qnli": ("entailment", "not_entailment"), "rte": ("entailment", "not_entailment"),
        "wnli": ("not_entailment", "entailment"),
    }
    assert {name: t.label_names for name, t in GLUE_TASKS.items()} == expected
    assert GLUE_TASKS["stsb"].kind == "regression"
    assert {t.metric for t in GLUE_TASKS.values()} == {
        "mcc", "accuracy", "accuracy_f1", "pearson_spearman"}
    assert GLUE_TASKS["mnli-mm"].hub_splits["dev"] == "validation_mismatched"
    assert GLUE_TASKS["mnli"].files["dev"] == "dev_matched.tsv"
    for task in GLUE_TASKS.values():
        assert {"train", "dev"} <= set(task.files) and set(task.files) == set(task.hub_splits)


# --------------------------------------------------------------------------- errors


def test_unknown_task_suggests():
    with pytest.raises(TaskError, match=r"Unknown GLUE task 'sst-2'\. Did you mean: sst2\? "
                                        r"Allowed: cola, mnli"):
        load_glue("sst-2", "dev", None)


def test_unknown_split_lists_allowed():
    with pytest.raises(TaskError, match=r"'test'.*Allowed: dev, train, validation"):
        load_glue("rte", "test", GLUE_DIR)


def test_missing_data_dir(tmp_path):
    with pytest.raises(DataError, match=r"not found: .*nowhere"):
        load_glue("rte", "dev", tmp_path / "nowhere")


def test_missing_task_folder(tmp_path):
    with pytest.raises(DataError, match=r"folder not found: .*QNLI.*train\.tsv"):
        load_glue("qnli", "train", tmp_path)


def test_missing_file(tmp_path):
    (tmp_path / "MNLI").mkdir()
    with pytest.raises(DataError, match=r"file not found: .*MNLI.dev_mismatched\.tsv"):
        load_glue("mnli-mm", "dev", tmp_path)


def test_bad_label_names_file_line_and_value(tmp_path):
    _write(tmp_path / "RTE" / "dev.tsv", [
        "index\tsentence1\tsentence2\tlabel", "0\tA.\tB.\tentailment", "1\tC.\tD.\tmaybe",
    ])
    with pytest.raises(DataError, match=r"dev\.tsv line 3: label 'maybe' is not one of"):
        load_glue("rte", "dev", tmp_path)


def test_bad_score_and_missing_column(tmp_path):
    header = ("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\t"
              "sentence2\tscore")
    _write(tmp_path / "STS-B" / "dev.tsv", [header, "0\tg\tf\t2012\t0\tn\tn\tA.\tB.\tfive"])
    with pytest.raises(DataError, match=r"line 2: score 'five'"):
        load_glue("stsb", "dev", tmp_path)
    _write(tmp_path / "SST-2" / "dev.tsv", ["text\tlabel", "good .\t1"])
    with pytest.raises(DataError, match=r"no column 'sentence'.*found 'text', 'label'"):
        load_glue("sst2", "dev", tmp_path)


def test_wrong_field_count_outside_qqp_is_an_error(tmp_path):
    _write(tmp_path / "CoLA" / "dev.tsv", ["gj04\t1\t\tFine.", "gj04\t0\t*"])
    with pytest.raises(DataError, match=r"line 2: expected 4 tab-separated fields, found 3"):
        load_glue("cola", "dev", tmp_path)


# --------------------------------------------------------------------------- hub path


def test_hub_rows_are_converted(monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load(path, config, split):
        calls.append((path, config, split))
        return datasets.Dataset.from_dict(
            {"premise": ["P1", "P2"], "hypothesis": ["H1", "H2"], "label": [2, 0], "idx": [0, 1]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    examples = load_glue("mnli-mm", "validation", None)
    assert calls == [("nyu-mll/glue", "mnli", "validation_mismatched")]
    assert examples == [Example("P1", "H1", 2), Example("P2", "H2", 0)]


def test_hub_failure_is_a_data_error(monkeypatch):
    datasets = pytest.importorskip("datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"Could not load GLUE sst2.*--data-dir") as info:
        load_glue("sst2", "train", None)
    assert "\n" not in str(info.value)


def test_hub_regression_labels_are_floats():
    datasets = pytest.importorskip("datasets")
    rows = datasets.Dataset.from_dict(
        {"sentence1": ["a"], "sentence2": ["b"], "label": [3.8], "idx": [0]})
    assert glue._examples_from_hub(GLUE_TASKS["stsb"], rows) == [Example("a", "b", 3.8)]
