module github.com/gopandadoc/pandadocauth/pgstore

go 1.23.0

require (
	github.com/gopandadoc/pandadocauth v0.0.0-00010101000000-000000000000
	github.com/jackc/pgx/v5 v5.7.6
	go.uber.org/goleak v1.3.0
	golang.org/x/oauth2 v0.30.0
)

require (
	github.com/jackc/pgpassfile v1.0.0 // indirect
	github.com/jackc/pgservicefile v0.0.0-20240606120523-5a60cdf6a761 // indirect
	github.com/jackc/puddle/v2 v2.2.2 // indirect
	golang.org/x/crypto v0.37.0 // indirect
	golang.org/x/sync v0.16.0 // indirect
	golang.org/x/text v0.24.0 // indirect
)

replace github.com/gopandadoc/pandadocauth => ../
