module github.com/gopandadoc/pandadocauth

go 1.23.0

require (
	github.com/jarcoal/httpmock v1.4.2
	go.uber.org/goleak v1.3.0
	golang.org/x/oauth2 v0.30.0
	golang.org/x/sync v0.16.0
)
