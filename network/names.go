package network

import (
	"math/rand/v2"
)

// Generated container names are two words, as Docker makes them, so people can tell
// containers apart without reading IDs.
var (
	nameAdjectives = []string{"agile", "bold", "brave", "bright", "calm", "clever", "cool", "eager", "fast",
		"gentle", "happy", "keen", "kind", "lively", "lucid", "merry", "neat", "nimble", "proud", "quick",
		"quiet", "rapid", "sharp", "shy", "smart", "steady", "swift", "tidy", "vivid", "witty"}
	nameNouns = []string{"badger", "bison", "crane", "dingo", "eagle", "falcon", "ferret", "gecko", "heron",
		"ibis", "jackal", "koala", "lemur", "lynx", "marten", "newt", "otter", "panda", "puffin", "quail",
		"raven", "salmon", "stoat", "tapir", "toucan", "urchin", "vole", "walrus", "wombat", "yak"}
)

func randomName() string {
	return nameAdjectives[rand.IntN(len(nameAdjectives))] + "_" + nameNouns[rand.IntN(len(nameNouns))]
}
