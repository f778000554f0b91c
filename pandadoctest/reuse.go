package pandadoctest

// Refresh-token reuse detection, as OAuth 2.1 (section 4.3.1) recommends
// for servers that rotate refresh tokens and as ory/fosite does: a
// refresh token that rotation replaced is a sign that it leaked, so
// presenting it again revokes the whole grant, the live refresh token
// included. For a client that loses track of its newest refresh token,
// this is the worst outcome there is: the user has to connect the app
// again.
//
// With WithReuseDetection (and rotation on), a refresh_token grant that
// presents a refresh token its grant rotated away is answered
// invalid_grant, like any refresh token that does not work, and the
// grant's live refresh token stops working too. Access tokens already
// issued keep working until they expire (Revoke them to stop them).
// Revoke and IssueToken are not affected. ReusedRefreshTokens counts
// the reuses.

// ReusedRefreshTokens returns how many times a refresh token that
// rotation had replaced was presented to the token endpoint, with reuse
// detection on, while its grant still worked: how many grants reuse
// detection revoked.
func (s *Server) ReusedRefreshTokens() int {
	return s.eng.ReusedRefreshTokens()
}
