//go:build !race

package pandadocauth

// simRace is set when the race detector is on: TestSim runs fewer
// schedules, each some ten times slower.
const simRace = false
