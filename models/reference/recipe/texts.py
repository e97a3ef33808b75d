"""Texts for synthesis: command phrasings and negative (label `none`) speech."""
import random

# surface forms of each command (punctuation/case change espeak/flite prosody)
def command_forms(cmd):
    forms = [cmd, cmd.capitalize() + ".", cmd + "!", cmd.capitalize() + "?", cmd.upper() + "."]
    if " " in cmd:
        a, b = cmd.split(" ", 1)
        forms.append(f"{a.capitalize()}, {b}.")
    return forms


FILLERS = ["okay", "hey", "now", "please", "alright", "um", "so", "right", "computer", "and",
           "yes", "well", "outpost", "then"]

# near misses, partial commands and reorderings: all `none`
HARD_NEGATIVES = [
    "top", "shop", "stock", "stuck", "stops", "stopped", "stopping", "step", "spot", "drop",
    "go", "go back", "go away", "go home", "go on", "ahead", "a head", "go forward", "go left",
    "parcel", "council", "camel", "candle", "counsel", "can sell", "cancelled order",
    "conform", "concern", "confer", "inform", "perform", "firm",
    "status", "statue", "stature", "report", "reporter", "support", "state report", "status quo",
    "mark", "market", "marker", "position", "positive", "mark this", "park position", "marks",
    "start", "starting", "started", "start over", "start the car", "restart", "start now",
    "record", "recording", "recorder", "reckoning", "the recording", "a recording",
    "end", "the end", "ending", "and recording", "send recording", "end game", "friend",
    "lights", "light", "the lights", "lights out", "lights up", "lights down", "lights low",
    "lights dim", "flights", "nights", "lightsaber", "likes", "lies", "sites", "tights",
    "on", "off", "of", "up", "down", "onto", "often", "offer", "upon", "upper", "downtown",
    "volume", "valium", "column", "volumes", "volume high", "volume low", "volume level",
    "volume control", "voluntary", "value", "solemn",
    "on lights", "off lights", "up volume", "down volume", "recording start", "recording end",
    "report status", "position mark", "ahead go", "stop go", "start end", "lights volume",
]

NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
           "eleven", "twelve", "thirteen", "fifteen", "twenty", "twenty five", "thirty", "forty two",
           "fifty", "sixty", "seventy", "eighty", "ninety", "one hundred", "a thousand"]

COMMON = """the of and to a in is it you that he was for on are with as i his they be at one have
this from or had by hot word but what some we can out other were all there when up use your how
said an each she which do their time if will way about many then them write would like so these
her long make thing see him two has look more day could come did number sound no most people my
over know water than call first who may down side been now find any new work part take get place
made live where after back little only round man year came show every good me give our under name
very through just form sentence great think say help low line differ turn cause much mean before
move right boy old too same tell does set three want air well also play small end put home read
hand port large spell add even land here must big high such follow act why ask men change went
light kind off need house picture try us again animal point mother world near build self earth
father head stand own page should country found answer school grow study still learn plant cover
food sun four between state keep eye never last let thought city tree cross farm hard start might
story saw far sea draw left late run while press close night real life few north open seem
together next white children begin got walk example ease paper group always music those both
mark often letter until mile river car feet care second book carry took science eat room friend
began idea fish mountain once base hear horse cut sure watch color face wood main enough plain
girl usual young ready above ever red list though feel talk bird soon body dog family direct
pose leave song measure door product black short numeral class wind question happen complete ship
area half rock order fire south problem piece told knew pass since top whole king space heard best
hour better true during hundred five remember step early hold west ground interest reach fast verb
sing listen six table travel less morning ten simple several vowel toward war lay against pattern
slow center love person money serve appear road map rain rule govern pull cold notice voice unit
power town fine certain fly fall lead cry dark machine note wait plan figure star box noun field
rest correct able pound done beauty drive stood contain front teach week final gave green oh quick
develop ocean warm free minute strong special mind behind clear tail produce fact street inch
multiply nothing course stay wheel full force blue object decide surface deep moon island foot
system busy test record boat common gold possible plane stead dry wonder laugh thousand ago ran
check game shape equate miss brought heat snow tire bring yes distant fill east paint language
among radio battery signal channel over copy roger affirmative negative sector north bravo charlie
delta echo alpha tango weather coffee battery camera engine window garage kitchen tomorrow""".split()

SENTENCES = [
    "the weather looks clear for tomorrow morning", "can you hear me over the radio",
    "we need more coffee in the kitchen", "please check the battery level on the camera",
    "the engine is running a little hot today", "i think we should wait for the others",
    "turn left at the next intersection", "the meeting starts at nine thirty",
    "how far is it to the next town", "she said the package arrived yesterday",
    "copy that, we are on our way", "the signal is weak in this valley",
    "let me know when you are ready", "the river crossing is closed for repairs",
    "write down the numbers from the display", "my position is near the old bridge",
    "the report is due at the end of the week", "they started the recording session late",
    "the lights in the hallway are flickering", "the volume of the tank is about forty liters",
    "we had to stop for fuel twice", "go ahead and take a break if you want",
    "confirm the order with the supplier", "cancel the subscription next month",
    "mark my words, it will rain", "the status of the project is unclear",
    "i switched the lights on and off again", "turn the volume up a bit please",
    "the recording ended abruptly", "start the generator before dark",
    "nothing to report from the north sector", "roger, holding position",
    "dinner will be ready in ten minutes", "did anyone see my keys",
    "the trail goes ahead for another mile", "lights on the east wall are broken",
    "she turned the volume down during the call", "stop by the office on your way home",
]


def random_sentence(rng, nmin=3, nmax=10):
    return " ".join(rng.choice(COMMON) for _ in range(rng.randint(nmin, nmax)))


def negative_text(rng):
    r = rng.random()
    if r < 0.35:
        return rng.choice(HARD_NEGATIVES)
    if r < 0.45:
        return rng.choice(NUMBERS)
    if r < 0.6:
        return rng.choice(SENTENCES)
    if r < 0.7:
        return " ".join(rng.choice(COMMON) for _ in range(rng.randint(1, 2)))
    return random_sentence(rng)


def contains_command(text, commands):
    import re
    t = " " + re.sub(r"[^a-z ]", " ", text.lower()) + " "
    t = re.sub(r"\s+", " ", t)
    return any(f" {c} " in t for c in commands)
