package redisstore

// The fleet tests (internal/fleettest) on Redis: processes sharing a
// grant through one token key and one lock key.

import (
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/gopandadoc/pandadocauth"
	"github.com/gopandadoc/pandadocauth/internal/fleettest"
)

// TestFleet: replicas sharing a grant through a Store refresh it once per
// expiry or revocation, fleet-wide, and every API call succeeds.
func TestFleet(t *testing.T) {
	t.Parallel()
	s := testStore(t, testClient(t))
	fleettest.Run(t, s, map[string]string{"key": s.Key})
}

// TestFleetWithoutLocker shows why fleet mode exists: replicas that each
// keep the grant's token to themselves all refresh it when it expires,
// and with rotation every one but the first gets invalid_grant and fails.
func TestFleetWithoutLocker(t *testing.T) {
	t.Parallel()
	fleettest.RunWithoutLocker(t)
}

// TestFleetWorker is one replica of the fleet tests, run in a process of
// its own.
func TestFleetWorker(t *testing.T) {
	fleettest.Worker(t, func(t *testing.T, params map[string]string) pandadocauth.Store {
		rdb := redis.NewClient(testOptions(t))
		t.Cleanup(func() { rdb.Close() })
		return &Store{Client: rdb, Key: params["key"]}
	})
}
