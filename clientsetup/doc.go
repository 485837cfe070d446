// Package clientsetup builds the files that set up mail clients for
// smtpgate, as pure functions of the configuration: Thunderbird's
// autoconfig document (config-v1.1.xml), a Thunderbird add-on (.xpi) whose
// manifest carries an oauth_provider (Thunderbird 140 and later), the
// enterprise policies.json that force-installs it, and Apple configuration
// profiles (.mobileconfig). Nothing here does I/O; the web app and the
// command line serve and write what it returns.
package clientsetup
