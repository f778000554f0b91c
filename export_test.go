package pandadocauth

import "time"

// Test-only access for the external test package, whose tests run
// against pandadoctest (which imports this package, so they cannot be
// internal tests).

// SetRetryBase shortens the back-off between refresh attempts, for every
// TokenSource of the test binary.
func SetRetryBase(d time.Duration) { testRetryBase.Store(int64(d)) }
