package pgstore

// The fleet tests (internal/fleettest) on PostgreSQL: processes sharing
// a grant through one row and one advisory lock.

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gopandadoc/pandadocauth"
	"github.com/gopandadoc/pandadocauth/internal/fleettest"
)

// TestFleet: replicas sharing a grant through a Store refresh it once per
// expiry or revocation, fleet-wide, and every API call succeeds.
func TestFleet(t *testing.T) {
	t.Parallel()
	pool := testPool(t, 0)
	table := testTable(t, pool)
	const key = "fleet-grant"
	fleettest.Run(t, &Store{Pool: pool, Table: table, Key: key}, map[string]string{"table": table, "key": key})
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
		pool, err := pgxpool.New(context.Background(), os.Getenv(dsnEnv))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		return &Store{Pool: pool, Table: params["table"], Key: params["key"]}
	})
}
