package fleettest

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/gopandadoc/pandadocauth"
	"github.com/gopandadoc/pandadocauth/pandadoctest"
)

// Grants is the keyed stores' test of many grants in a fleet: two
// replicas, each a Grants on a store of its own from open, share 40
// grants seeded through seed, under the names key(0) … key(39), against
// a token endpoint that rotates refresh tokens. After every access
// token expires, each grant is refreshed exactly once across the fleet,
// no request fails, and seed reads each grant's live refresh token.
func Grants(t *testing.T, seed pandadocauth.KeyedStore, open func() pandadocauth.KeyedStore, key func(i int) string) {
	t.Helper()
	const grants, replicas, perGrant = 40, 2, 3
	srv := pandadoctest.NewServer(pandadoctest.WithRotation(true))
	defer srv.Close()
	ctx := context.Background()
	firstRT := make([]string, grants)
	for i := range grants {
		tok := srv.IssueToken()
		firstRT[i] = tok.RefreshToken
		if err := seed.Save(ctx, key(i), tok); err != nil {
			t.Fatal(err)
		}
	}
	clients := make([]*http.Client, replicas)
	for r := range clients {
		g := &pandadocauth.Grants{Config: srv.Config(), Store: open()}
		defer g.Wait()
		clients[r] = &http.Client{Transport: g.Transport(srv.Client().Transport)}
	}
	burst := func() []error {
		var mu sync.Mutex
		var errs []error
		var wg sync.WaitGroup
		for i := range grants {
			for _, c := range clients {
				for range perGrant {
					wg.Add(1)
					go func() {
						defer wg.Done()
						req, _ := http.NewRequestWithContext(pandadocauth.WithGrant(ctx, key(i)), "GET", srv.URL+"/public/v1/documents", nil)
						resp, err := c.Do(req)
						if err == nil {
							resp.Body.Close()
							if resp.StatusCode != http.StatusOK {
								err = fmt.Errorf("%s: status %d", key(i), resp.StatusCode)
							}
						}
						if err != nil {
							mu.Lock()
							errs = append(errs, err)
							mu.Unlock()
						}
					}()
				}
			}
		}
		wg.Wait()
		return errs
	}
	if errs := burst(); len(errs) != 0 {
		t.Fatalf("warm burst: %v", errs)
	}
	if n := srv.TokenRequests("refresh_token"); n != 0 {
		t.Fatalf("%d refreshes of valid tokens", n)
	}
	srv.ExpireAll()
	if errs := burst(); len(errs) != 0 {
		t.Fatalf("after every token expired: %d failures, first %v", len(errs), errs[0])
	}
	if n := srv.TokenRequests("refresh_token"); n != grants {
		t.Errorf("%d refreshes after every token expired; want %d, one per grant fleet-wide", n, grants)
	}
	for i, rt := range firstRT {
		if n := srv.GrantTokenRequests(rt); n != 1 {
			t.Errorf("grant %d: %d refreshes; want 1", i, n)
		}
		live, ok := srv.LiveRefreshToken(rt)
		tok, err := seed.Load(ctx, key(i))
		if err != nil || !ok || tok.RefreshToken != live {
			t.Errorf("grant %d: stored refresh token is not the live one (%v)", i, err)
		}
	}
}
