package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/gopandadoc/pandadocauth"
)

// errMissingCredentials means a refresh is due and the client ID or
// secret is not set: nothing is sent, since PandaDoc would answer
// invalid_client.
var errMissingCredentials = errors.New("missing client credentials")

// missingCredentials names the client credential cfg lacks, as the user
// sets it, or returns nil.
func missingCredentials(cfg *pandadocauth.Config) error {
	var missing []string
	if cfg.ClientID == "" {
		missing = append(missing, "the client ID (-client-id or $"+envClientID+")")
	}
	if cfg.ClientSecret == "" {
		missing = append(missing, "the client secret (-client-secret or $"+envClientSecret+")")
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("%w: the token must be refreshed, and %s %s not set", errMissingCredentials,
		strings.Join(missing, " and "), map[bool]string{true: "is", false: "are"}[len(missing) == 1])
}

// needsRefresh reports whether freshToken refreshes t, the stored token,
// before using it: with force, when it has no access token, or when it
// expires within minValidity.
func needsRefresh(t *oauth2.Token, force bool) bool {
	return force || t == nil || t.AccessToken == "" || !t.Expiry.IsZero() && time.Until(t.Expiry) < minValidity
}

// noRefresh is a TokenSource that Transport cannot make refresh: a
// command without client credentials uses the stored token as it is,
// and a 401 comes back as such instead of a refresh that is bound to
// fail.
type noRefresh struct{ src *pandadocauth.TokenSource }

func (n noRefresh) Token() (*oauth2.Token, error) { return n.src.Token() }
