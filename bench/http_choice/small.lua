-- (a) small KServe v2 JSON infer request (~300 bytes)
wrk.method = "POST"
wrk.path = "/v2/models/m/infer"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"id":"req-000001","parameters":{"binary_data_output":false},' ..
  '"inputs":[{"name":"input","shape":[1,8],"datatype":"FP32","parameters":{},' ..
  '"data":[0.123456789,1.234567891,2.345678912,3.456789123,4.567891234,' ..
  '5.678912345,6.789123456,7.891234567]}],' ..
  '"outputs":[{"name":"output","parameters":{"binary_data":false}}]}'
dofile(os.getenv("HC_DIR") .. "/common.lua")
