package pandadoctest_test

import (
	"context"
	"errors"
	"testing"

	"golang.org/x/oauth2"

	"github.com/gopandadoc/pandadocauth/pandadoctest"
)

// With reuse detection, presenting a refresh token that rotation
// replaced revokes the grant: the live refresh token stops working too.
// Without it, or without rotation, the live refresh token keeps working.
func TestReuseDetection(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		opts       []pandadoctest.Option
		reuseFails bool // presenting the replaced refresh token fails
		liveWorks  bool // the live refresh token works after that
		reuses     int
	}{
		{"reuse detection", []pandadoctest.Option{pandadoctest.WithRotation(true), pandadoctest.WithReuseDetection()}, true, false, 1},
		{"rotation only", []pandadoctest.Option{pandadoctest.WithRotation(true)}, true, true, 0},
		{"reuse detection without rotation", []pandadoctest.Option{pandadoctest.WithReuseDetection()}, false, true, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := pandadoctest.NewServer(tc.opts...)
			defer srv.Close()
			ctx := context.Background()
			conf := srv.Config()
			first := srv.IssueToken()
			other := srv.IssueToken() // another grant, which must not suffer
			second, err := conf.Refresh(ctx, first.RefreshToken)
			if err != nil {
				t.Fatal(err)
			}
			_, err = conf.Refresh(ctx, first.RefreshToken)
			if failed := err != nil; failed != tc.reuseFails {
				t.Fatalf("presenting the first refresh token again: %v", err)
			}
			if err != nil {
				var re *oauth2.RetrieveError
				if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
					t.Errorf("reuse answered %v, want invalid_grant", err)
				}
			}
			live, ok := srv.LiveRefreshToken(first.RefreshToken)
			if ok != tc.liveWorks {
				t.Errorf("LiveRefreshToken reports %v, want %v", ok, tc.liveWorks)
			}
			if ok && live != second.RefreshToken {
				t.Errorf("LiveRefreshToken is not the newest refresh token")
			}
			_, err = conf.Refresh(ctx, second.RefreshToken)
			if works := err == nil; works != tc.liveWorks {
				t.Errorf("refreshing with the newest refresh token: %v; want it to work: %v", err, tc.liveWorks)
			}
			if _, err := conf.Refresh(ctx, other.RefreshToken); err != nil {
				t.Errorf("another grant: %v", err)
			}
			if n := srv.ReusedRefreshTokens(); n != tc.reuses {
				t.Errorf("ReusedRefreshTokens = %d, want %d", n, tc.reuses)
			}
		})
	}
}

// A revoked grant is revoked once: presenting its replaced refresh
// tokens again counts no more reuses, and Revoke is not a reuse.
func TestReuseDetectionRevokedGrant(t *testing.T) {
	t.Parallel()
	srv := pandadoctest.NewServer(pandadoctest.WithRotation(true), pandadoctest.WithReuseDetection())
	defer srv.Close()
	ctx := context.Background()
	conf := srv.Config()
	first := srv.IssueToken()
	second, err := conf.Refresh(ctx, first.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := conf.Refresh(ctx, first.RefreshToken); err == nil {
			t.Fatal("a replaced refresh token worked")
		}
	}
	if _, err := conf.Refresh(ctx, second.RefreshToken); err == nil {
		t.Fatal("the grant was not revoked")
	}
	if n := srv.ReusedRefreshTokens(); n != 1 {
		t.Errorf("ReusedRefreshTokens = %d, want 1", n)
	}

	third := srv.IssueToken()
	srv.Revoke(third.RefreshToken)
	if _, err := conf.Refresh(ctx, third.RefreshToken); err == nil {
		t.Fatal("a revoked refresh token worked")
	}
	if n := srv.ReusedRefreshTokens(); n != 1 {
		t.Errorf("after Revoke, ReusedRefreshTokens = %d, want 1", n)
	}
}
